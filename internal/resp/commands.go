package resp

// The command table. Arity and key positions are Redis's.

var commandList = []*command{
	{name: "PING", arity: -1, flags: flagOpen, group: "connection", summary: "Returns the server's liveliness response.", fn: cmdPing},
	{name: "ECHO", arity: 2, group: "connection", summary: "Returns the given string.", fn: cmdEcho},
	{name: "HELLO", arity: -1, flags: flagOpen, group: "connection", summary: "Handshakes with the server: RESP version, authentication, client name.", fn: cmdHello},
	{name: "AUTH", arity: -2, flags: flagOpen, group: "connection", summary: "Authenticates with a shoal credential: AUTH name hex-secret.", fn: cmdAuth},
	{name: "SELECT", arity: 2, group: "connection", summary: "Changes the connection's kv channel (a name, or a number: its name; 0 is the default channel).", fn: cmdSelect},
	{name: "QUIT", arity: -1, flags: flagOpen, group: "connection", summary: "Closes the connection.", fn: cmdQuit},
	{name: "RESET", arity: 1, flags: flagOpen, group: "connection", summary: "Resets the connection.", fn: cmdReset},
	{name: "CLIENT", arity: -2, group: "connection", summary: "SETNAME, GETNAME, ID, INFO, SETINFO.", fn: cmdClient},

	{name: "GET", arity: 2, flags: flagKeyed | flagForward, first: 1, last: 1, step: 1, group: "string", summary: "Returns the string value of a key.", fn: cmdGet},
	{name: "SET", arity: -3, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "string", summary: "Sets the string value of a key (EX, PX, EXAT, PXAT, NX, XX, KEEPTTL, GET).", fn: cmdSet},
	{name: "SETNX", arity: 3, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "string", summary: "Sets the value of a key only when it does not exist.", fn: cmdSetNX},
	{name: "GETDEL", arity: 2, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "string", summary: "Returns the value of a key and deletes it.", fn: cmdGetDel},
	{name: "GETEX", arity: -2, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "string", summary: "Returns the value of a key, changing its expiry (EX, PX, EXAT, PXAT, PERSIST).", fn: cmdGetEx},
	{name: "MGET", arity: -2, flags: flagForward, first: 1, last: -1, step: 1, group: "string", summary: "Returns the values of keys.", fn: cmdMGet},
	{name: "MSET", arity: -3, flags: flagForward | flagWrite, first: 1, last: -1, step: 2, group: "string", summary: "Sets the values of keys (not atomic across nodes).", fn: cmdMSet},
	{name: "DEL", arity: -2, flags: flagForward | flagWrite, first: 1, last: -1, step: 1, group: "generic", summary: "Deletes keys.", fn: cmdDel},
	{name: "UNLINK", arity: -2, flags: flagForward | flagWrite, first: 1, last: -1, step: 1, group: "generic", summary: "Deletes keys (as DEL).", fn: cmdDel},
	{name: "EXISTS", arity: -2, flags: flagForward, first: 1, last: -1, step: 1, group: "generic", summary: "Counts the keys that exist.", fn: cmdExists},
	{name: "EXPIRE", arity: -3, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "generic", summary: "Sets a key's time to live in seconds.", fn: cmdExpire},
	{name: "PEXPIRE", arity: -3, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "generic", summary: "Sets a key's time to live in milliseconds (kept to the whole second, rounded up).", fn: cmdPExpire},
	{name: "TTL", arity: 2, flags: flagKeyed | flagForward, first: 1, last: 1, step: 1, group: "generic", summary: "Returns a key's time to live in seconds.", fn: cmdTTL},
	{name: "PTTL", arity: 2, flags: flagKeyed | flagForward, first: 1, last: 1, step: 1, group: "generic", summary: "Returns a key's time to live in milliseconds.", fn: cmdPTTL},
	{name: "PERSIST", arity: 2, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "generic", summary: "Removes a key's expiry.", fn: cmdPersist},
	{name: "INCR", arity: 2, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "string", summary: "Increments the integer value of a key by one.", fn: cmdIncr},
	{name: "INCRBY", arity: 3, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "string", summary: "Increments the integer value of a key.", fn: cmdIncrBy},
	{name: "DECR", arity: 2, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "string", summary: "Decrements the integer value of a key by one.", fn: cmdDecr},
	{name: "DECRBY", arity: 3, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "string", summary: "Decrements the integer value of a key.", fn: cmdDecrBy},
	{name: "APPEND", arity: 3, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "string", summary: "Appends a string to the value of a key.", fn: cmdAppend},
	{name: "STRLEN", arity: 2, flags: flagKeyed | flagForward, first: 1, last: 1, step: 1, group: "string", summary: "Returns the length of a string value.", fn: cmdStrlen},
	{name: "TYPE", arity: 2, flags: flagKeyed | flagForward, first: 1, last: 1, step: 1, group: "generic", summary: "Returns the type of a key: string, list (a queue channel) or none.", fn: cmdType},
	{name: "SCAN", arity: -2, flags: flagForward, group: "generic", summary: "Iterates over the keys of the channel, over every node (MATCH, COUNT).", fn: cmdScan},
	{name: "KEYS", arity: 2, group: "generic", summary: "Returns the keys that match a pattern (at most 100000).", fn: cmdKeys},
	{name: "DBSIZE", arity: 1, flags: flagForward, group: "server", summary: "Returns the number of keys of the channel, over every node.", fn: cmdDBSize},
	{name: "FLUSHDB", arity: -1, flags: flagWrite | flagAdmin, group: "server", summary: "Removes the connection's kv channel everywhere (RemoveChannel).", fn: cmdFlushDB},

	{name: "RPUSH", arity: -3, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "list", summary: "Pushes values to a queue channel.", fn: cmdPush},
	{name: "LPUSH", arity: -3, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "list", summary: "Pushes values to a queue channel (at the tail, as RPUSH).", fn: cmdPush},
	{name: "LPOP", arity: -2, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "list", summary: "Pops the oldest values of a queue channel.", fn: cmdPop},
	{name: "RPOP", arity: -2, flags: flagKeyed | flagForward | flagWrite, first: 1, last: 1, step: 1, group: "list", summary: "Pops the oldest values of a queue channel (as LPOP).", fn: cmdPop},
	{name: "LLEN", arity: 2, flags: flagKeyed | flagForward, first: 1, last: 1, step: 1, group: "list", summary: "Returns the number of records of a queue channel.", fn: cmdLLen},
	{name: "BLPOP", arity: -3, flags: flagWrite | flagBlocking, first: 1, last: -2, step: 1, group: "list", summary: "Pops the oldest value of the first non-empty queue channel, waiting up to a timeout.", fn: cmdBLPop},
	{name: "BRPOP", arity: -3, flags: flagWrite | flagBlocking, first: 1, last: -2, step: 1, group: "list", summary: "As BLPOP.", fn: cmdBLPop},

	{name: "INFO", arity: -1, group: "server", summary: "Returns information about the server (server, clients, memory, stats, replication, keyspace).", fn: cmdInfo},
	{name: "COMMAND", arity: -1, group: "server", summary: "Returns information about commands (COUNT, INFO, DOCS, LIST)."}, // fn set by init,
	{name: "CONFIG", arity: -2, group: "server", summary: "CONFIG GET of a few read-only settings.", fn: cmdConfig},
}

var commands = map[string]*command{}

func init() {
	for i, c := range commandList {
		c.idx = i
		if c.name == "COMMAND" {
			c.fn = cmdCommand
		}
		commands[c.name] = c
	}
}
