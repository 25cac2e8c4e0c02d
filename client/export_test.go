package client

// WithoutMapNotify makes the client follow map changes only through the
// answers to its requests (`not my vbucket`), not through a MapNotify
// stream: tests of that path.
func WithoutMapNotify() Option { return func(o *options) { o.noNotify = true } }
