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
  token:   %s   (printed once; valid until this process exits)
  listen:  %s   (loopback only; --listen 0.0.0.0 to widen)

Upload with curl:
  curl -k -F token=%s -F artifact=@mypkg-1.0-0.conda %s

Upload with Python requests:
  import requests
  requests.post(%q, data={'token': %q},
                files={'artifact': open('mypkg-1.0-0.conda', 'rb')}, verify=False)

`, dir, token, addr, token, url, url, token)
}
