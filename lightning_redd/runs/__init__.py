"""The run folder: its layout (:mod:`.layout`) and write order (:mod:`.folder`), the manifest of
the files a run wrote (:mod:`.manifest`), the lock of one run at a time (:mod:`.lock`), the
checks before compute (:mod:`.checks`), the settings that decide its results (:mod:`.config`),
durable atomic writes (:mod:`.fsio`), its errors (:mod:`.errors`) and the process's memory
readings (:mod:`.memory`)."""
