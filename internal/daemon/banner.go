package daemon

import (
	"fmt"
	"io"
)

func printDevBanner(w io.Writer, scheme, addr, dir, token string) {
	url := fmt.Sprintf("%s://%s/", scheme, addr)
	fmt.Fprintf(w, `
conda-upload-server is running in dev mode (self-signed certificate, not for production).

  channel: %s
  pages:   %s   (the channel in a browser: packages, files, counts)
  token:   %s   (printed once; valid until this process exits)
  listen:  %s   (loopback only; --listen 0.0.0.0 to widen)

Upload with curl:
  curl -k -F token=%s -F artifact=@mypkg-1.0-0.conda %s

Upload with Python requests:
  import requests
  requests.post(%q, data={'token': %q},
                files={'artifact': open('mypkg-1.0-0.conda', 'rb')}, verify=False)

Install from it (the channel is served publicly in dev mode; the
certificate is self-signed, so clients must be told not to verify it,
which is only acceptable on a throwaway machine):
  conda install --insecure -c %s mypkg
  pixi workspace channel add %s && pixi add --tls-no-verify mypkg

`, dir, url, token, addr, token, url, url, token, url, url)
}
