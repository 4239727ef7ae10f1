"""Pure membership-inference attacks: signal arrays in, scores, metrics and reports out.

Every attack follows :mod:`attacks.base` and is registered in :mod:`attacks.registry`. This
package imports no other package of the project (see ``docs/architecture.md``).
"""
