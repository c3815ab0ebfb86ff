#!/bin/sh
# rpm %post: $1 is 1 on install, 2 or more on upgrade. Creates the service
# user and directories; never enables or starts the units.
systemd-sysusers conda-upload-server.conf || :
systemd-tmpfiles --create conda-upload-server.conf || :
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null 2>&1 || :
	if [ "${1:-1}" -ge 2 ]; then
		systemctl try-restart conda-upload.service >/dev/null 2>&1 || :
	fi
fi
