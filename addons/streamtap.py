"""mitmproxy entry point: `mitmdump -s addons/streamtap.py --set streamtap_db=sqlite:///x.db`.

The addon itself lives in the package (`streamtap.addon`), so `streamtap proxy` and this script share it.
"""

import os
import sys

# mitmproxy puts this script's folder first on sys.path, where this very file would shadow the package.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
if getattr(sys.modules.get("streamtap"), "__file__", None) == os.path.abspath(__file__):
    del sys.modules["streamtap"]

from streamtap.addon import StreamtapAddon  # noqa: E402

addons = [StreamtapAddon()]
