"""PDF reports: a participant's course across visits, one session, a study's progress."""

from reportlab import rl_config

# Before reportlab.graphics.shapes is first imported (server.reports.charts): without it every
# attribute a chart's shape sets is type-checked, a third of a chart's drawing time (profiled).
# Our shapes are built from plain floats and colours; reportlab documents this switch.
rl_config.shapeChecking = 0
