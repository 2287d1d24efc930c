"""The file source: finds log files, tells them apart, tails them, follows their rotations and
keeps their checkpoints; hands what it reads on as `Segment`s.

* `discovery`: include/exclude scans, real paths, the worker that owns a file, rotated siblings.
* `identity`: a file's identity (device, inode, fingerprint of its first line) and its key.
* `tailer`: one file's reader, following its growth, truncation, rotation and deletion.
* `inotify`: directory watches that wake tailers and discovery before their next poll.
* `checkpoints`: the persistent read positions, keyed by file identity.
* `recovery`: which files a rotation left where no include pattern leads (functions).
* `source`: `FileSource`, which runs all of the above for the agent.
"""
