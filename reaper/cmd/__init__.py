"""The console scripts (reaper-agent, reaper-manage, reaper-ctl).

Every entry point imports this package first, before anything can import
eventlet, so its import-time deprecation warning is filtered here.
"""
from reaper import logsetup

logsetup.silence_eventlet()
