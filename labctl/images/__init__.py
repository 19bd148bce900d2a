"""The images a lab needs (specs named by input hash), their build contexts and builds; the Dockerfiles
ship here as package data."""
