package kv

// Record is one kv record as the dump writer and loader see it. Key and
// Value may alias a scratch buffer that is valid only during the callback
// that received the record.
type Record struct {
	Key    []byte
	Value  []byte
	Seqno  uint64 // the vBucket seqno that last changed the record; also its CAS
	Expiry int64  // unix seconds after which the record is gone; 0 = never
}
