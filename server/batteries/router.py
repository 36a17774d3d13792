from __future__ import annotations

from fastapi import APIRouter, status

from server.batteries import service
from server.batteries.deps import BatteryManager, BatteryReader
from server.batteries.schemas import BatteryCreate, BatteryRead, BatteryUpdate
from server.core.db import DBSession
from server.studies.deps import StudyConfigurer, StudyReader

router = APIRouter(prefix="/api/batteries", tags=["batteries"])


@router.get("", response_model=list[BatteryRead])
async def list_batteries(access: StudyReader, db: DBSession) -> list[BatteryRead]:
    batteries = await service.list_batteries(db, study_id=access.study.id)
    return [BatteryRead.build(battery, modules) for battery, modules in batteries]


@router.post("", response_model=BatteryRead, status_code=status.HTTP_201_CREATED)
async def create_battery(
    battery_in: BatteryCreate, access: StudyConfigurer, db: DBSession
) -> BatteryRead:
    battery, modules = await service.create(db, study_id=access.study.id, battery_in=battery_in)
    return BatteryRead.build(battery, modules)


@router.get("/{battery_id}", response_model=BatteryRead)
async def get_battery(access: BatteryReader, db: DBSession) -> BatteryRead:
    modules = await service.get_battery_modules(db, access.battery.id)
    return BatteryRead.build(access.battery, modules)


@router.patch("/{battery_id}", response_model=BatteryRead)
async def update_battery(
    battery_in: BatteryUpdate, access: BatteryManager, db: DBSession
) -> BatteryRead:
    battery, modules = await service.update(db, battery=access.battery, battery_in=battery_in)
    return BatteryRead.build(battery, modules)


@router.post("/{battery_id}/publish", response_model=BatteryRead)
async def publish_battery(access: BatteryManager, db: DBSession) -> BatteryRead:
    battery, modules = await service.publish(db, battery=access.battery)
    return BatteryRead.build(battery, modules)
