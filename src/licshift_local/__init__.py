"""Local tooling, never deployed: the Functions host emulator, the local stack (simulator +
Azurite + host), Azurite control, the demo and the `licshift host` / `licshift sim serve` commands.
The function app never imports it (.funcignore keeps it out of the package).
"""
