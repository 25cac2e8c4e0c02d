package kv

import "time"

// GetWithExpiry is Get that also returns the record's expiry, in unix
// seconds (0: never). It appends the value to dst and does not allocate
// when dst has room; on error dst is returned as is.
func (s *Store) GetWithExpiry(ch string, key, dst []byte) ([]byte, uint64, int64, error) {
	if s.closed.Load() {
		return dst, 0, 0, ErrClosed
	}
	if err := checkKey(key); err != nil {
		return dst, 0, 0, err
	}
	p, m := s.locate(key)
	p.mu.RLock()
	t := p.tables[ch]
	if t == nil {
		p.mu.RUnlock()
		return dst, 0, 0, ErrNotFound
	}
	i, found := t.find(key, m)
	if !found {
		p.mu.RUnlock()
		return dst, 0, 0, ErrNotFound
	}
	r := t.recAt(i)
	if !s.visible(&r) {
		p.mu.RUnlock()
		return dst, 0, 0, ErrNotFound
	}
	dst = append(dst, r.value...)
	exp := r.expiry()
	p.mu.RUnlock()
	p.ctr.read.Add(1)
	p.ctr.readBytes.Add(int64(len(r.value)))
	return dst, r.seqno, exp, nil
}

// Add stores value under key only when ch holds no live record of key
// (an expired record or a tombstone does not count); it fails with
// ErrExists otherwise. ttl is as for Put. It returns the record's CAS.
func (s *Store) Add(ch string, key, value []byte, ttl time.Duration) (uint64, error) {
	if err := s.checkWrite(ch, key, value); err != nil {
		return 0, err
	}
	stamp := s.ttlStamp(ttl)
	var w recordRef
	s.lockRecord(&w, ch, key)
	defer w.p.mu.Unlock()
	if w.live {
		return 0, ErrExists
	}
	return s.write(w.p, w.t, ch, w.i, w.found, w.m, key, value, stamp)
}
