"""Tests of mcrelay.federation (a package, so that its conftest does not clash with the others')."""
