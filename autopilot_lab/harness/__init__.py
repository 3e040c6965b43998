"""Trusted code that runs INSIDE the sandbox, next to a candidate's code.

The parent never imports a candidate: checks send a job (``autopilot_lab.harness.probes:<name>``)
to the sandbox, the probe loads the candidate from the scratch folder, measures, and returns
plain JSON that the parent-side check turns into a verdict.
"""
