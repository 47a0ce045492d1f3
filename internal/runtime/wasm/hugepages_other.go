//go:build !linux

package wasm

func adviseHugePages([]byte) {}

func collapseCodeSoon() {}
