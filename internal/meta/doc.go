// Package meta is the cluster's metadata: a Raft group (hashicorp/raft)
// whose state machine holds the members, the vBucket map, the channel
// catalog, the settings and the failover count, with its log and stable
// store in one bbolt file (internal/raftstore), its snapshots under
// DATA/meta, its logs through slog, and its transport on the node's data
// port (a connection whose first request is RaftOpen is handed to the
// StreamLayer).
//
// State.Apply is the state machine itself: pure (a State and a Command in,
// the next State and the command's result out), so every node computes
// the same result and the rules are tested without raft. Meta wires it to
// raft and offers what the node needs: bootstrap, propose (leader only),
// the current State, the leader, membership changes.
package meta
