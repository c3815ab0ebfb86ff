package server

import (
	"net/http"
	"net/netip"
)

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) (*Result, error) {
	return &Result{Status: http.StatusOK, Body: map[string]any{"status": "ok"}}, nil
}

// readyz answers 200 while the daemon's health check passes; the same
// check decides whether the watchdog is pinged.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) (*Result, error) {
	if s.draining.Load() {
		return nil, errShuttingDown
	}
	if s.o.Observe.Health != nil {
		if err := s.o.Observe.Health(); err != nil {
			return nil, &Error{Status: http.StatusServiceUnavailable, Reason: "unavailable", Msg: "not ready: " + oneLine(err.Error()), Err: err}
		}
	}
	if s.o.Observe.Degraded != nil {
		if why := s.o.Observe.Degraded(); why != "" {
			return &Result{Status: http.StatusOK, Body: map[string]any{"status": "degraded", "reason": why}}, nil
		}
	}
	return &Result{Status: http.StatusOK, Body: map[string]any{"status": "ready"}}, nil
}

// metrics serves the Prometheus metrics to allowed addresses only.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) (*Result, error) {
	if s.o.Observe.Metrics == nil {
		return nil, newError(http.StatusNotFound, "metrics are disabled")
	}
	ip, err := netip.ParseAddr(remoteIP(r))
	allowed := false
	for _, p := range s.o.Observe.MetricsAllow {
		if err == nil && p.Contains(ip.Unmap()) {
			allowed = true
		}
	}
	if !allowed {
		return nil, newError(http.StatusForbidden, "metrics are not served to this address")
	}
	s.o.Observe.Metrics.Handler().ServeHTTP(w, r)
	return handled, nil
}
