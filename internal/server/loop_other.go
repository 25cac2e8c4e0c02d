//go:build !linux

package server

import "errors"

// loops is empty where there is no epoll: every connection keeps its
// goroutine.
type loops struct{}

type loopConn struct{ loop *struct{} }

func (c *conn) toLoop() bool     { return false }
func (c *conn) kickLoop()        {}
func (s *Server) shutdownLoops() {}

var errNoLoop = errors.New("server: no event loop on this system")

func (c *conn) rawRead([]byte) (int, error)  { return 0, errNoLoop }
func (c *conn) rawWrite([]byte) (int, error) { return 0, errNoLoop }
