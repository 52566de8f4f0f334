"""Why a training run started, recorded as the ``trigger`` of the registered version's lineage.

``manual``: someone ran or submitted it; ``schedule``: a KFP recurring run (``bertops schedule``);
``drift``: a monitoring verdict on live traffic asked for it. The pipeline takes it as a run
parameter, so a version's tags say which of these produced it.
"""

MANUAL = "manual"
SCHEDULE = "schedule"
DRIFT = "drift"
TRIGGERS = (MANUAL, SCHEDULE, DRIFT)
