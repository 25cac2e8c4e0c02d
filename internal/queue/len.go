package queue

// Len returns the records queued in channel (memory and overflow) and
// whether it has subscribers (then it is the first subscriber queue's);
// 0 for an unknown channel.
func (s *Store) Len(channel string) (records int64, subscribed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[channel]
	if ch == nil || len(ch.queues) == 0 {
		return 0, false
	}
	q := ch.queues[0]
	return int64(q.ring.live) + q.of.records, ch.subscribed
}
