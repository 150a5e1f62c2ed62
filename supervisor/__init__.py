"""Supervision, in two weights.

- Light: ``base.Supervisor``, a light actor implementing OTP's supervisor
  behaviour over ``actors``; ``tree.py`` declares a worker's tree as data.
- Heavy: ``node_supervisor.NodeSupervisor``, a Thespian actor that starts the
  node's worker processes and restarts them under the same rules.

Both share the pure decision code: ``spec`` (child specs, flags),
``restart_window`` (intensity and period) and ``policy`` (restart types and
strategies). Imports: ``actors`` and the standard library; Thespian only in
the heavy modules.
"""
