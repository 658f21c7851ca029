"""Analyses on the pipeline network (the tables of :mod:`cimtwin.spatial.pipeline_network`),
one module per analysis:

- :mod:`.graph`: the network as index arrays, connected components, valve segments, and the
  per-process graph cache;
- :mod:`.isolation`: valves to close for a burst pipe, and the buildings it supplies;
- :mod:`.trace`: up/downstream and connectivity traces;
- :mod:`.profile`: longitudinal profiles along a chain of pipes;
- :mod:`.sections`: excavation checks and cross sections;
- :mod:`.qa`: topology checks (sub-networks, dangling ends, flow loops, reversed slopes);
- :mod:`.clearance_rules`: the GB 50289-2016 rule engine;
- :mod:`.clearance`: pipe-pipe and pipe-building clearance analysis;
- :mod:`.lookup`: pipes and points by id or position, as GeoJSON features;
- :mod:`.shared`: table names, query runners, SQL fragments, JSON shaping, errors.
"""
