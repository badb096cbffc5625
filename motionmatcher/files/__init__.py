"""The files the pipeline reads and writes: their formats, their checks and how they are written.

The one atomic writer every module uses (:mod:`.atomic`: a unique temporary name in the
destination folder, fsync, rename, fsync of the folder); safetensors files that record what made
them and are checked when read (:mod:`.tensor_files`); videos and images (:mod:`.video`) and a
reference video's identity record (:mod:`.video_identity`); the manifest CSV (:mod:`.manifest`),
the workflow config's keys (:mod:`.config_keys`) and the Parquet tables' schemas
(:mod:`.table_schemas`). A new file type, a new column or a stricter check of an input belongs
here; nothing here knows about models or methods.
"""
