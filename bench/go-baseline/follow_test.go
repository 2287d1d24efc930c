package main

import (
	"testing"

	"github.com/fsnotify/fsnotify"
)

// After a rotation the new file's reader registers its wake-up under the path the old reader
// still drains; the old reader letting go must not take the new reader's wake-up with it (it
// did: the new file was then read only every -poll interval, 250 ms, instead of on each write).
func TestUnfollowKeepsTheNewReadersWakeUp(t *testing.T) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Skip("fsnotify unavailable:", err)
	}
	defer w.Close()
	a := &agent{watcher: w, wakes: map[string]chan struct{}{}, watched: map[string]bool{}}
	dir := t.TempDir()
	path := dir + "/a.log"
	old, fresh := make(chan struct{}, 1), make(chan struct{}, 1)
	a.follow(path, old)
	a.follow(path, fresh) // the rotated-in file, opened while the old one drains
	a.unfollow(path, old)
	if a.wakes[path] != fresh {
		t.Fatalf("the new reader lost its wake-up when the old one let go")
	}
	a.unfollow(path, fresh)
	if _, ok := a.wakes[path]; ok {
		t.Fatalf("a reader's own wake-up stays after it let go")
	}
}
