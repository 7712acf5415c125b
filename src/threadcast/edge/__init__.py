"""The push edge: holds browser connections and fans published messages out to them."""
