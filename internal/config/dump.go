package config

import (
	"flag"

	"shoal/internal/dump"
)

// Dump settings (Config.DumpDir, DumpInterval, DumpCodec, OnCorruptDump).

// DefaultDumpInterval is the period of the kv dumps.
const DefaultDumpInterval = Duration(dump.DefaultInterval)

func bindDump(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.DumpDir, "dump-dir", c.DumpDir, "directory of the kv dumps (default DATA/dump)")
	fs.Var(&c.DumpInterval, "dump-interval", "period of the kv dumps, the first one at a random time within it (0: only on shutdown and on demand)")
	fs.Var(&c.DumpCodec, "dump-codec", "compression of the kv dumps: zstd (smaller) or s2 (faster)")
	fs.Var(&c.OnCorruptDump, "on-corrupt-dump", "a kv dump that does not verify at start: fail, backup (load the previous dump) or skip (start without the channel)")
}
