package router

// Workers bounds the deliveries in progress at once; default 100.
func Workers(n int) Option { return func(r *Router) { r.workers = n } }

// MXPort makes MX delivery use port instead of 25. MX records carry no
// port, so tests with a server on a loopback port need this.
func MXPort(port string) Option { return func(r *Router) { r.mxPort = port } }
