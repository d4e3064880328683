"""What-if scenarios are questions for `socksim sweep`, not regression tests: some simulate
minutes of heavy load, and none has expectations to check or a real-kernel run worth waiting for.
Keep the scenario plugin from collecting them."""

collect_ignore_glob = ["*.yaml"]
