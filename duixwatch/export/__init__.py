"""What duixwatch tells the outside: metrics and their exposition, status views and
autoscaling signals."""
