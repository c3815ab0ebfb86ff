#!/bin/sh
# rpm %postun: $1 is 0 on erase, 1 on upgrade. The channel in
# /var/lib/conda-upload-server and the conda-upload user are kept.
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
if [ "${1:-0}" -eq 0 ] && [ -d /var/lib/conda-upload-server ]; then
	echo "conda-upload-server: kept the channel in /var/lib/conda-upload-server and the conda-upload user" >&2
fi
