package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// An upload takes an upload slot, and counts as an arrival for the index
// scheduler, only once it has authenticated: a request without a token
// must not hold what legitimate uploads wait for. Until then it may read
// no more than a few small form fields (the form's token field may follow
// others), and it must send them within the auth deadline; one that does
// not is cut with 408 and counts against its address as a failed login.

// DefaultAuthDeadline is how long an upload may take, from its first
// body byte, to authenticate when its token is in the form rather than
// in a header.
const DefaultAuthDeadline = 10 * time.Second

// admission is an upload request's claim on the server, taken by admit
// once the request has authenticated.
type admission struct {
	release func() // frees the slot
	arrived func() // ends the arrival
	body    *rateReader
}

type admissionKey struct{}

func admissionOf(r *http.Request) *admission {
	a, _ := r.Context().Value(admissionKey{}).(*admission)
	return a
}

// uploading runs an upload protocol's handler with what every upload
// needs around it: refusal while draining or for an address over its
// failed-login limit; admission (see admit), released at the end; and
// counting a failed login, or a body too slow to authenticate, against
// the address.
func (s *Server) uploading(w http.ResponseWriter, r *http.Request, protocol string,
	h func(w http.ResponseWriter, r *http.Request, arrived func()) (*Result, error)) (*Result, error) {
	fieldsOf(r).protocol = protocol
	if s.draining.Load() {
		return nil, errShuttingDown
	}
	if wait, blocked := s.o.Limits.AuthLimiter.Blocked(remoteIP(r), time.Now()); blocked {
		return nil, &Error{Status: http.StatusTooManyRequests, Reason: "rate_limited",
			Msg: "too many failed authentications from this address; retry later", RetryAfter: wait}
	}
	a := &admission{}
	r = r.WithContext(context.WithValue(r.Context(), admissionKey{}, a))
	defer a.end()
	res, err := h(w, r, a.arrive)
	if err != nil {
		if st := errorOf(err).Status; st == http.StatusUnauthorized || (st == http.StatusRequestTimeout && a.release == nil) {
			s.o.Limits.AuthLimiter.Fail(remoteIP(r), time.Now())
			s.authFailures.Add(1)
		}
	}
	return res, err
}

// admit takes an upload slot and starts the arrival of an authenticated
// upload, and lifts its auth deadline. It does nothing the second time.
func (s *Server) admit(r *http.Request) error {
	a := admissionOf(r)
	if a == nil || a.release != nil {
		return nil
	}
	select {
	case s.sem <- struct{}{}:
	default:
		return errBusy
	}
	s.o.Observe.Metrics.InFlight(1)
	a.release = func() {
		s.o.Observe.Metrics.InFlight(-1)
		<-s.sem
	}
	a.arrived = s.o.Limits.Arrivals.Begin()
	if a.body != nil {
		a.body.authenticated()
	}
	return nil
}

// arrive ends the upload's arrival: its package is stored or refused.
func (a *admission) arrive() {
	if a.arrived != nil {
		a.arrived()
		a.arrived = nil
	}
}

func (a *admission) end() {
	a.arrive()
	if a.release != nil {
		a.release()
	}
}

// paced wraps an upload's body so that it is cut when it trickles in
// slower than min_upload_rate and, until the request is admitted, when
// it has not authenticated by the auth deadline.
func (s *Server) paced(w http.ResponseWriter, r *http.Request, body io.Reader) io.Reader {
	a := admissionOf(r)
	preAuth := a != nil && a.release == nil
	l := s.o.Limits
	if !preAuth && (l.MinUploadRate <= 0 || l.RateWindow <= 0) {
		return body
	}
	rr := &rateReader{r: body, rc: http.NewResponseController(w), min: l.MinUploadRate, window: l.RateWindow}
	if preAuth {
		d := l.AuthDeadline
		if d <= 0 {
			d = DefaultAuthDeadline
		}
		rr.until, rr.authTimeout = time.Now().Add(d), &Error{Status: http.StatusRequestTimeout, Reason: "too_slow",
			Msg: fmt.Sprintf("no valid token within %s of the request; closed", d)}
		a.body = rr
	}
	return rr
}
