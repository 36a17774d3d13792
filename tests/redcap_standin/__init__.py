"""A REDCap API stand-in for tests: a real HTTP server PyCap 2.7 talks to unchanged.

In-process::

    with RedcapStandin(classic_project()) as standin:   # or longitudinal_project()
        project = redcap.Project(standin.url, standin.token)
        standin.fail(503, times=2)          # next 2 calls: 503 + HTML page
        standin.fail(502, times=1, after_processing=True)  # call is carried out, answer lost
        standin.fail(502, times=1, content="record")  # only the next record call fails
        standin.reshape(longitudinal_project())  # the project's design changes, same tokens
        standin.delay_seconds = 0.5         # sleep before every answer
        standin.calls, standin.hits         # CallRecord log (content, action, rows, times)
        standin.records                     # stored rows
        standin.stop(); standin.start()     # down and up again, same port, same records
        standin.reset()                     # initial records, knobs and log cleared

In another process (kill -9 and restart it; records persist in workdir/state.json)::

    with StandinProcess(classic_project(), tmp_path) as proc:
        proc.control("configure", fail_with_status=500, times=1, delay_seconds=0)
        proc.kill(); proc.start()

or by hand: ``python -m tests.redcap_standin --port N --project project.json --state s.json``
(``POST /__control__`` with JSON ``{"op": "state" | "configure" | "clear_failure" | "reset"}``).
"""

from .demo import classic_project, longitudinal_project
from .fields import field
from .knobs import CallRecord
from .process import StandinProcess
from .project import Arm, Dag, Event, FormEvent, ProjectModel, Repeating, Token, new_token
from .server import RedcapStandin, free_port

__all__ = [
    "Arm",
    "CallRecord",
    "Dag",
    "Event",
    "FormEvent",
    "ProjectModel",
    "RedcapStandin",
    "Repeating",
    "StandinProcess",
    "Token",
    "classic_project",
    "field",
    "free_port",
    "longitudinal_project",
    "new_token",
]
