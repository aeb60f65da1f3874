"""Machine learning shared by the services: the sentence encoder, drift statistics
(`drift`) and the building blocks of model families (`modeling`). Heavy (torch, sklearn):
import the module you need."""
