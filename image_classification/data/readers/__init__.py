"""How each format of dataset is read: image folders and array files (local_files),
tfds (tfds_source), the bundled digits."""
