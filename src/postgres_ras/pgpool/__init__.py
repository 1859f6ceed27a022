"""pgpool-II in front of the write and read endpoints: it routes, it never fails over."""
