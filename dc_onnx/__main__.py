import sys

from dc_onnx.cli import main

sys.exit(main())
