"""What a lab says: lab.yaml (lab.py, load.py) and task.toml (task.py) read into typed records with
positions for errors, hardware profiles, units."""
