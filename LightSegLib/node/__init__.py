"""LightSeg as a DICOM node: CT series arrive by C-STORE, wait in a persistent queue, are segmented, and their DICOM
Segmentation and measurement report go back by C-STORE. ``queue.py`` holds the state, ``receive.py`` the storage
SCP, ``send.py`` the storage SCU, ``node.py`` the loop that ties them together."""
