"""mitmproxy entry point: `mitmdump -s addons/streamtap.py --set streamtap_db=sqlite:///x.db`.

The addon itself lives in the package (`streamtap.addon`), so `streamtap proxy` and this script share it.
"""

import prometheus_client

from streamtap.addon import StreamtapAddon

prometheus_client.disable_created_metrics()

addons = [StreamtapAddon()]
