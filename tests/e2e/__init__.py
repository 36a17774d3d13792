"""End-to-end harness for the resilience tests (tests/test_resilience_*.py).

stack.py          a stack of real, killable servers per test: PostgreSQL database, redis-server,
                  REDCap stand-in, relay and Celery workers; the study set-up and submissions
"""
