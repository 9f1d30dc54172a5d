//go:build tools

// Package tools keeps the etcd main package in this module's graph so
// `go mod tidy` records every dependency it needs in go.sum.
package tools

import _ "go.etcd.io/etcd/server/v3"
