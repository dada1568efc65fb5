"""The write edge: atomic replacement of the proxy's files, the manifest of what was written, the mass-removal
guard, the key of the input the files came from, and the lock that keeps two processes from writing at once."""
