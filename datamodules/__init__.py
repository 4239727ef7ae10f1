"""Data: catalog readers, the seeded split planner, manifests and leak checks, images and the
DataModules. Imports no other package of the project.
"""
