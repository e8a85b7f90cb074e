"""Model backends behind one ``Backend`` protocol: llama.cpp in-process, and a scripted fake."""
