// Package vbmap is the vBucket map of a cluster and the states a node
// holds its vBuckets in. It is a leaf: engines, the server, the metadata
// group and the placement functions all use it, and it imports none of them.
//
//   - State: what a node does with one vBucket (active, replica, pending,
//     dead). Every engine keeps one per vBucket (States) and the server
//     routes every request by it.
//   - Map: an immutable, revision-numbered map from vBucket to chain
//     [active, replica1, …] of node ids, with a per-vBucket epoch raised at
//     every change of the vBucket's active. A Map is never modified once
//     built; a new revision is a new Map.
//   - Table: one node's view of one Map: its own state for every vBucket
//     and where each active is. Holder swaps Tables atomically (as
//     internal/catalog swaps its map), so Route costs one atomic load.
package vbmap
