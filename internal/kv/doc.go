// Package kv is the in-memory key-value engine (swarm's DHT node).
package kv
