package server

// Locks of the server, and the order they are taken in.
//
// Goroutines: Serve's accept loop; one reader per connection (it runs the
// handlers of the requests it reads); one goroutine per stream (stream.go);
// one per committed group of log appends (log.go); Server.ackLoop, at most
// one per server, with one short-lived goroutine per connection it answers
// (queue.go); the event loops (loop_linux.go), each of which plays the
// reader of the connections registered with it; and whoever calls
// Shutdown. A connection has one reader at a time: its goroutine until it
// registers with a loop (the loop's mutex orders the hand-over), the loop
// until it hands it back (with a go statement).
//
// The locks, each with what it guards:
//
//	Server.mu           ln, conns, closing; connWG.Add happens under it
//	conn.shutOnce       (a sync.Once) the connection's shutting and who
//	                    owns nc after a takeover: beginShutdown or handOver
//	conn.wmu            out, spare, writing, werr, deadlineAt; wcond waits
//	                    on it for out to shrink (waitRoom)
//	conn.smu            the streams map
//	stream.mu           a stream's credit, suspended and stopped; cond waits
//	                    on it for credit, a resume, a stop or the end
//	durableAcks.mu      the answers waiting for the queue journal, and
//	                    whether ackLoop runs
//	eventLoop.mu        a loop's connections, kicked ones and closing
//	appends.sem         (a semaphore) the log appends in flight of a
//	                    connection; only the reader acquires it, never while
//	                    holding a lock
//
// State without a lock: a connection's authentication, takeover, big,
// clock, appends.open and queueConn are the reader's alone; conn.nc is set
// by the reader before any other goroutine of the connection starts, and
// conn.raw never changes (Shutdown uses raw); counters are atomics.
//
// Order. A lock in the left column may be held while taking the ones on
// its right, and no other nesting exists:
//
//	Server.mu  ->  conn.shutOnce (beginShutdown, under Server.mu)
//	conn.wmu   ->  the kv engine's partition read lock (kvGet copies the
//	               value straight into out between begin and end)
//	conn.wmu   ->  eventLoop.mu (a failed flush kicks the loop)
//
// conn.smu, stream.mu and durableAcks.mu are leaves: nothing is taken
// under them but the contexts' own locks (endStreams cancels the streams'
// contexts under conn.smu, and their AfterFunc takes stream.mu in a
// goroutine of its own). A stream takes stream.mu to wait for credit,
// releases it, takes conn.wmu to append its frame, releases it, and takes
// stream.mu again to count the credit used; finish drops the stream from
// conn.smu before it answers; ackLoop swaps its batch under
// durableAcks.mu and answers without it. No server lock is held while
// calling an engine, the catalog or a hook (ChannelRemoved, Dumps), except
// conn.wmu around kvGet's kv.Store.Get, which does no I/O.
//
// I/O. No lock is held across a disk access, or across a socket read or
// write but for the one exception at the end of this paragraph:
// flush releases conn.wmu around SetWriteDeadline and Write (writing marks
// the buffer as taken meanwhile) and retakes it for the bookkeeping; the
// reader waits for data, for room in out (wcond.Wait releases conn.wmu) and
// for the append budget without a lock; Queue.Sync in ackLoop runs without
// durableAcks.mu. Under a lock the sockets are only given deadlines or
// closed, which does not wait for the peer: Shutdown closes the listeners,
// sets read deadlines and, when its context ends, closes the accepted
// connections (raw, not the TLS ones) under Server.mu. The one exception
// is flush closing nc under conn.wmu after a failed write: for a TLS
// connection, Close first writes the close_notify alert, a few bytes that
// crypto/tls gives at most 5 s. An event loop's write (flushNow) runs
// under conn.wmu too, but never waits: the socket is non-blocking and what
// it does not take goes back to the connection's goroutine.
