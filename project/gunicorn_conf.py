"""gunicorn settings for ``make serve`` (bind and workers come from the command line).

The access log never holds a token: tokens travel in the ``Authorization`` header,
which the default log format leaves out, and never in URLs.
"""

import os

wsgi_app = "project.wsgi:application"
accesslog = "-"
errorlog = "-"
# Heartbeat files in memory, not on a disk that may stall (gunicorn's advice for containers).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
timeout = 30
graceful_timeout = 20
# Workers restart now and then, so a slow leak in any library never takes a host down.
max_requests = 10000
max_requests_jitter = 1000
# gunicorn 24+ opens a control socket in $HOME shared by every instance on the host; the
# example needs none, and several servers side by side (tests, blue/green) must not collide.
control_socket_disable = True
