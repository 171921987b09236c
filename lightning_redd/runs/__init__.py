"""The run folder: its layout and write order (:mod:`.folder`), the settings that decide its
results (:mod:`.config`), durable atomic writes (:mod:`.fsio`) and the process's memory
readings (:mod:`.memory`)."""
