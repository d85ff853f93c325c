"""mitmproxy entry point: `mitmdump -s addons/streamtap.py --set streamtap_db=sqlite:///x.db`.

The addon itself lives in the package (`streamtap.addon`), so `streamtap proxy` and this script share it.
"""

from streamtap.addon import StreamtapAddon

addons = [StreamtapAddon()]
