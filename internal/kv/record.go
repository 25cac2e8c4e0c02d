package kv

import "shoal/internal/engine"

// Record is one kv record as Scan, the dump writer and the loader see it:
// engine.Record, so that dumps need not import the kv engine. Key and Value
// may alias a scratch buffer that is valid only during the callback that
// received the record.
type Record = engine.Record
