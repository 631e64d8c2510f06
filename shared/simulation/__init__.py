"""A simulated LA played against the running platform.

- `generate`: from a seed and a configuration, an LA (schools with calendars, pupils with UPNs) and
  a day-by-day plan of what its schools' MIS and officers do (pure, deterministic).
- `drive`: plays a plan through the services' public HTTP APIs (`attendance simulate`).
- `recount`: what the platform must conclude from a plan, recomputed from the domain rules without
  the services' own rule code (the whole-platform scenario test checks the platform against it).
"""
