"""Realtime stats: the topology that counts events per forum and minute, and the reading side
(`threadcast.stats.query`) over the Parquet results it writes to the object store."""
