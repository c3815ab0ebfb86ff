#!/usr/bin/env bash
# Lints the packages in dist/: lintian on the .deb (no error, no warning;
# overrides in packaging/deb/lintian-overrides), rpmlint on the .rpm (no
# error; filters in packaging/rpmlint.toml), shellcheck on the maintainer
# scripts, and the rpm's file list and scripts as rpm reads them.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for t in lintian rpmlint rpm shellcheck; do command -v "$t" >/dev/null || missing+=("$t"); done
if ((${#missing[@]})); then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

deb=$(ls dist/*.deb) rpm=$(ls dist/*.rpm)
echo "== lintian $deb"
# initial-upload-closes-no-bugs: only meaningful for uploads to Debian.
# Shown with overrides and info tags; gated without --show-overrides,
# which makes lintian count overridden tags as failures.
lintian -I --show-overrides --fail-on none --suppress-tags initial-upload-closes-no-bugs "$deb"
lintian --fail-on error,warning --suppress-tags initial-upload-closes-no-bugs "$deb"
echo "== rpmlint $rpm"
# nfpm's rpm writer stores absolute paths in the cpio payload, and
# rpmlint unpacks with "cpio -id", which would then write the package's
# files into this machine's /. A cpio that refuses absolute names keeps
# them in rpmlint's own temp dir (where its checks look for them).
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
printf '#!/bin/sh\nexec /usr/bin/cpio --no-absolute-filenames "$@"\n' >"$shim/cpio"
chmod +x "$shim/cpio"
PATH=$shim:$PATH rpmlint -c packaging/rpmlint.toml "$rpm"
echo "== shellcheck maintainer scripts"
shellcheck -s sh packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm packaging/rpm/*.sh
echo "== rpm -qpl / --scripts"
rpmfiles=$(rpm -qpl "$rpm") debfiles=$(dpkg-deb -c "$deb")
echo "$rpmfiles"
for f in /usr/bin/conda-upload-server /usr/lib/systemd/system/conda-upload.service /usr/lib/systemd/system/conda-upload.socket \
	/usr/lib/sysusers.d/conda-upload-server.conf /usr/lib/tmpfiles.d/conda-upload-server.conf /etc/conda-upload-server/config.toml \
	/usr/share/man/man8/conda-upload-server.8.gz /etc/logrotate.d/conda-upload-server; do
	grep -qx "$f" <<<"$rpmfiles" || { echo "rpm lacks $f" >&2; exit 1; }
	grep -q " \.$f\$" <<<"$debfiles" || { echo "deb lacks $f" >&2; exit 1; }
done
# The manual: every page of docs/, and every optional drop-in of systemd/
# as an example, in both, and marked %doc in the rpm (nfpm.yaml names the
# rpm's files one by one).
rpmdocs=$(rpm -qp --docfiles "$rpm")
for page in docs/*.md docs/img/* systemd/*.conf; do
	f=/usr/share/doc/conda-upload-server/${page/#systemd/examples}
	grep -qx "$f" <<<"$rpmdocs" || { echo "rpm lacks $f as %doc: add it to nfpm.yaml" >&2; exit 1; }
	grep -q " \.$f\$" <<<"$debfiles" || { echo "deb lacks $f" >&2; exit 1; }
done
rpm -qp --configfiles "$rpm" | grep -x /etc/conda-upload-server/config.toml >/dev/null # not -q: rpm must not get SIGPIPE under pipefail
dpkg-deb -f "$deb" Version | grep -v "^0\.0\.0" >/dev/null
scripts=$(rpm -qp --scripts "$rpm")
echo "$scripts"
# The rpm scripts as rpm will run them, checked like the sources.
for s in postinstall preuninstall postuninstall; do
	body=$(awk -v s="$s" '$0 ~ "^"s" scriptlet" {on=1; next} /scriptlet \(using/ {on=0} on' <<<"$scripts")
	[[ -n $body ]] || { echo "rpm has no $s scriptlet" >&2; exit 1; }
	shellcheck -s sh - <<<"$body"
done
echo "== packages lint-clean"
