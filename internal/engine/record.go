package engine

// Record is one keyed record as a snapshot copies it and a load puts it
// back, keeping its seqno and expiry: the kv engine hands its records to
// dumps in this form and loads them from it. Key and Value may alias a
// scratch buffer that is valid only during the callback that received the
// record.
type Record struct {
	Key    []byte
	Value  []byte
	Seqno  uint64 // the vBucket seqno that last changed the record; also its CAS
	Expiry int64  // unix seconds after which the record is gone; 0 = never
}
